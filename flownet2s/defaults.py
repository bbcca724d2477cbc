"""F's training defaults, defined once: the flags and function signatures of flownet2s.train (fine-tuning as
in DFF, §4.2) and flownet2s.pretrain (flow-supervised pretraining on generated pairs), and eval.presets'
`FlowTrain` and `FlowPretrain`, read them. The pair gaps are the paper's (flownet2s.dff MIN_GAP/MAX_GAP)."""

# flownet2s.train: F fine-tuned through the propagated segmentation loss.
TRAIN_STEPS = 20000              # reconstructed: the paper gives no count
TRAIN_BATCH_SIZE = 4
TRAIN_LEARNING_RATE = 1e-4       # reconstructed (Adam, constant)
TRAIN_CHECKPOINT_EVERY = 500
TRAIN_VAL_PAIRS = 64             # validation pairs for the final propagated mIoU

# flownet2s.pretrain: end-point-error supervision on generated pairs with known flow.
PRETRAIN_INPUT_SIZE = 128        # flow-net input of the pairs (weights are size-free)
PRETRAIN_STEPS = 300
PRETRAIN_BATCH_SIZE = 8
PRETRAIN_LEARNING_RATE = 1e-4    # FlowNet 2.0's
PRETRAIN_CHECKPOINT_EVERY = 100
PRETRAIN_VAL_PAIRS = 64          # held-out generated pairs for the AEE before/after
PRETRAIN_FACE_PAIRS = 16         # held-out synthetic face pairs for a face AEE
