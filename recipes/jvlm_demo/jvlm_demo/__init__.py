"""The recipe of the shipped ``jvlm-demo`` model, built with the ``jvlm`` library.

The synthetic multilingual documents it learns from (``synthetic``, ``synth_*``), its
tokenizer (``demo_tokenizer``), the vision pretraining (``demo_vision``), the training data
sets of every stage (``stages.yaml``, written by ``demo.write_data``), the held-out evaluation
task (``eval_task``, registered with ``jvlm eval`` as ``synthetic`` through the
``jvlm.benchmarks`` entry point) and the reproduction experiments (``repro``).

    python -m jvlm_demo {data,init,rescale,vision,graft,probe,readout,examples,ship} ...
    python -m jvlm_demo.repro {connector,mixing,tiling,all} ...

This package depends on ``jvlm``; ``jvlm`` never imports it.
"""
