"""Build farm for relocatable CPython runtimes (see README.md)."""
