"""The product: live autocomplete, beam search, generation, the demo, the web server, the CLI and the bench.

It sits on top of the runtime (edge_rnn.runtime) and the contract core (edge_rnn.spec,
vocab, modelfile, graph, errors, corpora); nothing below imports it.
"""
