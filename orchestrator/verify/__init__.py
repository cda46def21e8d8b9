"""Verification stage: host-side archive and ELF audit, in-container runtime checks, and
bit-for-bit comparison of rebuilt archives.

- runtime.py    drives recipe/verify-runtime.sh in a container and judges the host-side audit
- required.py   the checks a runtime must pass (not skip), per variant and profile
- elfaudit.py   streams an archive and gathers facts about its ELF files
- reproduce.py  compares two archives member by member
"""
