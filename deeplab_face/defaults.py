"""N's training defaults (§4.2, DeepLab's settings), defined once: deeplab_face.train's flags and its
`train_eval` signature, and eval.presets' `SegmenterTrain`, read them."""

BACKBONE = "resnet_v1_50_beta"   # §4.2: ResNet-50 (beta)
CROP_SIZE = 513                  # S = 16k + 1
OUTPUT_STRIDE = 16
BATCH_SIZE = 8                   # the global batch
STEPS = 30000
LEARNING_RATE = 7e-3             # base rate of the poly schedule
LEARNING_POWER = 0.9             # DeepLab poly schedule
MOMENTUM = 0.9
WEIGHT_DECAY = 4e-5
CHECKPOINT_EVERY = 500           # steps between resumable checkpoints
