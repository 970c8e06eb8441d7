"""Tools beside the toolkit: the benchmark and its peer, PEFT adapters in and out; run as python -m tools.<name>.

They import the top-level files (xpe, data, train, evaluate), which never import them.
"""
