"""tf.distribute for the scheduler trainings (issue 11 item 1): inputs split over the replicas and the
DVSNet step (deeplab_face.distribute has the flag, the factory, the strategy's name and the chief rule).
"""
import numpy as np
import tensorflow as tf

SEED_STRIDE = 7919   # replica r draws its dropout masks from seed + r * SEED_STRIDE


def per_replica(strategy, parts):
    """Distributed values whose replica r (over every worker) gets the arrays of `parts[r]`."""
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tuple(tf.constant(a) for a in parts[ctx.replica_id_in_sync_group]))


def mse_step(strategy, model, optimizer, seed_variables=()):
    """step(x, z) -> loss: one optimizer step of the mean squared error of model(x)[:, 0] on the batch.

    One replica: the plain compiled step. Several: the batch (the global batch) is split over the
    replicas, each replica's loss is its squared errors over the GLOBAL batch size, so the replicas'
    losses and gradients sum to the one-device ones; Keras's optimizer sum-reduces the gradients.
    seed_variables: the model's Keras seed-generator states (deeplab_face.stage.seed_states). Each
    replica holds its own copy, equal to the others, so every replica would draw the same dropout
    masks for its share; during the step each copy's seed is offset by the replica id, then restored.
    """
    @tf.function(reduce_retracing=True)
    def train_step(x, z):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)[:, 0] - z))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def replica_step(x, z, count):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        offsets = [tf.cast(tf.stack([replica * SEED_STRIDE, 0]), v.dtype) for v in seed_variables]
        for v, offset in zip(seed_variables, offsets):
            v.assign_add(offset)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(x, training=True)[:, 0] - z)) / count
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))   # all-reduced (SUM) inside
        for v, offset in zip(seed_variables, offsets):
            v.assign_sub(offset)
        return loss

    @tf.function(reduce_retracing=True)
    def distributed_step(x, z, count):
        losses = strategy.run(replica_step, args=(x, z, count))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    replicas = strategy.num_replicas_in_sync

    def step(x, z):
        if replicas == 1:
            return train_step(x, z)
        parts = list(zip(np.array_split(x, replicas), np.array_split(z, replicas)))
        return distributed_step(*per_replica(strategy, parts), tf.constant(float(len(x)), tf.float32))

    return step
