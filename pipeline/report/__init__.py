"""The report: plot data from the dataset (data), its pictures (figures), one HTML page (page)."""
