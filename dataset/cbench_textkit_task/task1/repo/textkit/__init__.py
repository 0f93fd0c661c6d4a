"""textkit: small text helpers (the bundled cbench demo repository)."""
