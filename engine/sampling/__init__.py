"""SERT stage 1 sampling: the student's latent reasoning paths (DESIGN.md section 1).

For each question the prompt ``Question: {q}\\nAnswer:`` is encoded once; the student's top ``first_tokens`` next
tokens start one branch each (branch 0 = most probable; special tokens such as an instruct model's ``<|im_end|>``,
which is also its EOS, never start a branch: see :func:`branch_excluded_ids`), and every branch is continued
``per_branch`` times by sampling (top-k, then top-p inside the k, temperature) for at most ``max_new_tokens``
tokens, the branch token included. A path's ``mean_logprob`` is the mean over its tokens (branch token first, the
terminating EOS excluded) of ``log_softmax(raw logits)`` -- the student's plain next-token distribution at
temperature 1, whatever the sampling temperature -- taken from the very forward passes that sampled the path;
``perplexity = exp(-mean_logprob)``. The same passes give each token's margin p(top-1) - p(top-2) of that
distribution, and the path's ``confidence`` is their mean over the answer's tokens
(:func:`engine.sampling.paths.path_confidence`, CoT-decoding's Δ).

Backends: ``hf`` (transformers, CPU or one GPU; :mod:`engine.sampling.hf`) and ``vllm`` (GPU servers;
:mod:`engine.sampling.vllm_backend`), chosen by ``sampling.backend``; ``sampling.batch_invariant`` (a question's
paths exactly independent of the rest of the run, see :mod:`engine.sampling.hf`) is the hf backend's.
torch/transformers/vllm are imported lazily so importing this package is cheap. Modules: ``paths`` (what a
sampler returns), ``backends`` (choosing one), ``hf``, ``vllm_backend``, ``ops``, ``decoders``, ``cache``, ``threads``,
``stage`` (the sample stage).
"""
