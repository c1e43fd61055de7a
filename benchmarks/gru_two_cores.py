"""Two ways to put the GRU's second core to work, timed against the plain step (issue 15's GRU lever).

  python -m benchmarks.gru_two_cores [--repeats=7]

XLA's own threads may not help our GRU forward+backward (B=32, S=256, I=H=256, benchmarks/gru.py's
step): the recurrent product of one step (32 x 256 . 256 x 768) is too small to split (the one-thread
and default-thread rows of results/benchmarks say which is faster, once measured on a quiet machine).
This tries to give each core its own half of the batch instead:

  plain      the step as benchmarks/gru.py runs it (one XLA device, XLA's own threads)
  sharded    the batch sharded over two XLA CPU devices (NamedSharding): one scan per device,
             the weight gradients summed across them
  two scans  one program holding two independent scans, one per half-batch, which XLA:CPU may
             run side by side

All three compute the same gradients (checked here before timing). The process starts with
two host devices (--xla_force_host_platform_device_count=2); plain and two-scans run on the first.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from benchmarks.timing import define_quiet_flags, define_repeats, header, load_average, measure, wait_for_quiet  # noqa: E402
from models.gru import GRU  # noqa: E402
from train import cli  # noqa: E402
from train.records import is_quiet, not_quiet  # noqa: E402


def loss(model, x):
    y, h = model(x)
    return jnp.sum(y) + jnp.sum(h)


@nnx.jit
def plain_step(model, x):
    return nnx.grad(loss, argnums=(0, 1))(model, x)


@nnx.jit
def two_scans_step(model, x):
    half = x.shape[0] // 2
    return nnx.grad(lambda m, x: loss(m, x[:half]) + loss(m, x[half:]), argnums=(0, 1))(model, x)


def main(argv):
    del argv
    repeats = flags.FLAGS.repeats
    B, S, size = 32, 256, 256
    x = np.random.default_rng(0).standard_normal((B, S, size)).astype(np.float32)
    mesh = jax.make_mesh((2,), ("data",))
    model, sharded_model = GRU(size, size, rngs=nnx.Rngs(0)), GRU(size, size, rngs=nnx.Rngs(0))
    nnx.update(sharded_model, jax.device_put(nnx.state(sharded_model), NamedSharding(mesh, PartitionSpec())))
    x_one = jax.device_put(x, jax.devices()[0])
    x_sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    steps = {"plain": lambda: plain_step(model, x_one), "sharded": lambda: plain_step(sharded_model, x_sharded),
             "two scans": lambda: two_scans_step(model, x_one)}
    reference = jax.tree.leaves(steps["plain"]())
    for name in ("sharded", "two scans"):
        for a, b in zip(reference, jax.tree.leaves(steps[name]())):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-2, err_msg=name)
    busy = wait_for_quiet(flags.FLAGS.quiet_wait, flags.FLAGS.quiet_load)  # the compiles above load the machine
    load_before = load_average()
    times = measure(steps, repeats)
    print(header() + f"; before the timing {load_before}" + (f"; {busy}" if busy else ""))
    if not is_quiet(load_before):  # train.records.QUIET_LOAD
        print(f"\nTimes {not_quiet(load_before, 'python -m benchmarks.gru_two_cores')}; not reported.")
        return
    print(f"\n| GRU fwd+bwd, B={B}, S={S}, I=H={size} | ms (median of {repeats}, interleaved) | vs plain |")
    print("|---|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t.ms:.0f} | {times['plain'].ms / t.ms:.2f}x |")


if __name__ == "__main__":
    define_repeats(7)
    define_quiet_flags()
    cli.run(main)
