"""Inside the MLLM: what it keeps of what its encoder saw, layer by layer (docs/METHODS.md#layer-probes).

* ``extraction`` - one forward per image batch with hooks: the encoder's tokens, the visual-token
  hidden states after the projector (layer 0) and after each LLM block, and the attention share text
  positions put on image positions;
* ``metrics``    - C at layer L (the C score's matching and PCK on those states), linear
  reconstruction of the encoder features, attention aggregation;
* ``pipeline``   - the single pass over an SPair-layout set that feeds all of them;
* ``knn``        - mutual k-NN alignment of image and caption features (base LLM vs the MLLM's LLM);
* ``zeroshot``   - classification as lmms-eval loglikelihood tasks, and CLIP-style encoder zero-shot;
* ``checkpoint`` - the trained MLLM a probe reads: settings, loading, what its config says unloaded;
* ``probe_run``, ``knn_run``, ``zeroshot_run`` - the runs behind ``lmms-ac layers``, ``layers-knn``
  and ``zeroshot-tasks`` / ``zeroshot-encoder``: typed settings in, scores recorded, a report out;
* ``plots``      - the figures.
"""
