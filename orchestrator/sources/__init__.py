"""Where CPython sources come from: fetching and verifying tarballs (fetch)."""
