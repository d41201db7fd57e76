"""Penultimate features of a trained run, their silhouette and t-SNE (Fig. 5)."""

from __future__ import annotations

import functools
import os

import numpy as np


def penultimate_features(model, variables: dict, images, *, num_steps: int):
    """Inputs of the read-out layer and the logits, from one forward pass in inference mode.

    The read-out is the last ``tks_jax.models.layers.Linear`` the model calls (the classifier of
    ``docs/method.md`` §3, applied to every step), intercepted with
    ``flax.linen.intercept_methods``.

    Args:
      model: a ``tks_jax.models`` network.
      variables: its ``params`` (and ``batch_stats``).
      images: static ``[B, H, W, C]`` or event frames ``[T, B, H, W, C]``.
      num_steps: T.

    Returns:
      ``(features [T, B, D], logits [T, B, C])``.
    """
    import flax.linen as nn

    from tks_jax.models import layers

    captured = []

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.Linear) and context.method_name == "__call__":
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        logits = model.apply(variables, images, num_steps=num_steps, train=False)
    if not captured:
        raise ValueError(f"{type(model).__name__} calls no layers.Linear read-out.")
    return captured[-1], logits


def _load_state(workdir: str, config, model, info) -> dict:
    """The latest checkpoint of a finished run (params and BN statistics)."""
    import jax

    from tks_jax.training import checkpointing, optim
    from tks_jax.training import loop as loop_lib
    from tks_jax.training import sharding as sharding_lib

    manager = checkpointing.make_manager(
        os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints,
        async_save=False,
    )
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints; train first.")
    tx = optim.make_optimizer(config, optim.make_schedule(config, 1))
    init_fn = loop_lib.make_init_fn(model, tx, info, config)
    repl = sharding_lib.replicated(sharding_lib.make_mesh())
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
        jax.eval_shape(init_fn, jax.random.PRNGKey(0)),
    )
    state = checkpointing.restore_state_only(manager, step, abstract)
    manager.close()
    return state


def _mean_features(variables: dict, images, *, model, num_steps: int):
    feats, _ = penultimate_features(model, variables, images, num_steps=num_steps)
    return feats.mean(0)  # [B, D]: averaged over T like the output (Eq. 3)


@functools.cache
def _jitted_mean_features():
    """One jitted ``_mean_features`` per process, the network and T static: the runs of a
    study whose networks are equal (flax modules compare by their fields) share executables."""
    import jax

    return jax.jit(_mean_features, static_argnames=("model", "num_steps"))


def extract_features(workdir: str, config, num_examples: int) -> dict[str, np.ndarray]:
    """Time-averaged penultimate features of the first ``num_examples`` test examples.

    Returns:
      ``{'features': float32 [N, D], 'labels': int32 [N]}``.
    """
    import ml_collections

    from tks_jax.training import input_pipeline
    from tks_jax.training import loop as loop_lib

    cfg = ml_collections.ConfigDict(config.to_dict())
    limit = cfg.data.get("max_eval_examples")
    cfg.data.max_eval_examples = min(num_examples, limit) if limit else num_examples
    batches, info = input_pipeline.get_dataset(
        cfg, cfg.data.eval_split, train=False, batch_size=cfg.eval_batch_size,
        num_steps=cfg.num_steps, seed=cfg.seed, shard_index=0, shard_count=1,
    )
    model = loop_lib.build_model(cfg, info.num_classes)
    state = _load_state(workdir, cfg, model, info)
    variables = {"params": state["params"]}
    if state["batch_stats"]:
        variables["batch_stats"] = state["batch_stats"]

    forward = _jitted_mean_features()
    feats, labels = [], []
    for batch in batches:
        mask = np.asarray(batch["mask"], bool)
        feats.append(np.asarray(forward(variables, batch["image"], model=model,
                                        num_steps=cfg.num_steps))[mask])
        labels.append(np.asarray(batch["label"])[mask])
    return {"features": np.concatenate(feats).astype(np.float32),
            "labels": np.concatenate(labels).astype(np.int32)}


def silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette score (euclidean) of the classes in feature space: higher = better separated.

    Args:
      features: ``[N, D]``.
      labels: ``[N]`` integer classes.

    Returns:
      The mean silhouette in [-1, 1]; NaN with fewer than two classes.
    """
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    if len(np.unique(labels)) < 2:
        return float("nan")
    with threadpool_limits(limits=1):
        return float(silhouette_score(features, labels, metric="euclidean"))


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of ``features [N, D]`` (scikit-learn, PCA initialisation) -> ``[N, 2]``.

    Features without any variance (e.g. a layer that never spiked) have no embedding: zeros
    are returned (scikit-learn's PCA initialisation divides by the variance).
    """
    from sklearn.manifold import TSNE

    features = np.asarray(features, np.float64)
    if not np.all(np.isfinite(features)):
        raise ValueError("t-SNE: the features contain NaN or inf.")
    if float(features.std(0).max(initial=0.0)) == 0.0:
        return np.zeros((len(features), 2), np.float32)

    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    # One thread: OpenMP workers spin and crawl when the cores are busy (e.g. parallel runs).
    with threadpool_limits(limits=1):
        return tsne.fit_transform(features).astype(np.float32)
