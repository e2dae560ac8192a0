"""Scale-out on Ray: a whole corpus with Ray Data (`corpus.py`), replicas with Ray Serve (`serve.py`).

Ray is an optional dependency (`pip install m3engine[ray]`); the corpus job also runs in one
process without it, writing the same rows.
"""
