"""dltool: the textbook neural-network training recipe as one YAML config.

Module map (imports point down this list, never up; tests/test_structure.py fails on any cycle):

  cli.py        `dltool <command>`: parses argv, dispatches; the only module with lazy imports (fast --help)
  commands/     one module per command: train, evaluate, predict, sanity, gradcheck, summary, list, preview,
                sweep (multirun planning), sweep_report, diagnose (findings from a run dir)
  train/        run (prepare / train / finish), loop (train_one_epoch / evaluate / fit), callbacks,
                checkpoint, losses (+ penalties), optim (optimizers, schedules), restore (a run dir for evaluate),
                signals (per-layer update ratios, norms, activation stats), loggers (csv, tensorboard, figures)
  models/       builder (layer list -> nn.Module + shape trace), layers, blocks, backbones (torchvision),
                trace (per-layer records, mult-adds), init, finetune, summary
  data/         build (data sets by name -> DataBundle), splits, normalize (training split only), whitening,
                augment, datasets/ (embedded digits, synthetic, torchvision, image folders)
  config/       schema (typed dataclasses), compose (Hydra at the edge: config tree, overrides, @hydra.main),
                options (sanity./gradcheck. options)
  errors.py registry.py console.py plots.py plots_signals.py
                the shared floor: one error type, name lookup with did-you-mean, the only module that
                imports rich, matplotlib (Agg) figures
"""
