"""`m3engine bench`: workloads, the transformers baseline, accuracy checks, reports and plots."""
