"""Publishing: object stores (a local directory, S3), the manifests clients read, and the
publisher that writes archives immutably and manifests last."""
