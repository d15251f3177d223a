"""OCT B-scans: classification (CNV / DME / DRUSEN / NORMAL)."""
