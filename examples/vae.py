"""Train a VAE on binarised digits with the objective and gradient estimator of your choice.

The model and guide are plain Pyro (:class:`pplx.models.VAE`); the objective comes from
:mod:`pplx.objectives` and plugs into ``pyro.infer.SVI`` unchanged; the latent site's gradient
strategy is set with :func:`pplx.estimators.with_estimators` without editing the guide.

    python examples/vae.py --objective iwae --particles 8 --estimator reparam
    python examples/vae.py --objective elbo --estimator mvd --steps 500
    python examples/vae.py --quick

Prints the training loss every few steps and, at the end, the held-out ELBO and IWAE(64)
estimates of log p(x) (in nats per image).
"""

import argparse
import time

import pyro
import torch

import pplx.estimators as est
import pplx.objectives as obj
from pplx.datasets import binarized_digits
from pplx.models import VAE

OBJECTIVES = {
    "elbo": lambda k: obj.ELBO(num_particles=k),
    "stl": lambda k: obj.ELBO(num_particles=k, stl=True),
    # importance weights per image (every latent is local to the "data" plate)
    "iwae": lambda k: obj.IWAE(num_particles=k, local_plate="data"),
    "dreg": lambda k: obj.IWAE(num_particles=k, dreg=True, local_plate="data"),
    "vimco": lambda k: obj.VIMCO(num_particles=k, local_plate="data"),
    "renyi": lambda k: obj.Renyi(alpha=0.5, num_particles=k, local_plate="data"),
    "rws": lambda k: obj.RWS(num_particles=k, local_plate="data"),
}
ESTIMATORS = {
    "reparam": est.Reparam,
    "reinforce": lambda: est.Reinforce("auto"),
    "mvd": est.MVD,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", choices=sorted(OBJECTIVES), default="elbo")
    parser.add_argument("--estimator", choices=sorted(ESTIMATORS), default="reparam")
    parser.add_argument("--particles", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28, help="image side (8 or 28)")
    parser.add_argument("--z-dim", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small images, few steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.size, args.batch = 30, 8, 64
    particles = args.particles
    if args.objective in ("iwae", "dreg", "vimco", "renyi", "rws") and particles < 2:
        particles = 8
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()

    data = binarized_digits(args.size).to(args.device)
    train, test = data[:-300], data[-300:]
    vae = VAE(x_dim=data.shape[1], hidden=256 if args.size > 8 else 64, z_dim=args.z_dim)
    vae = vae.to(args.device)
    guide = est.with_estimators(vae.guide, {"z": ESTIMATORS[args.estimator]()})
    loss = OBJECTIVES[args.objective](particles)
    svi = pyro.infer.SVI(vae.model, guide, pyro.optim.Adam({"lr": args.lr}), loss=loss)
    print(f"objective={loss!r} estimator={args.estimator} device={args.device}")
    start = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, len(train), (args.batch,), device=train.device)
        value = svi.step(train[idx]) / args.batch
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss/image {value:9.3f}")
    seconds = time.perf_counter() - start
    with torch.no_grad():
        held_out = obj.IWAE(num_particles=64, local_plate="data")
        elbo = obj.ELBO(num_particles=8).estimate(vae.model, vae.guide, test) / len(test)
        iwae = held_out.estimate(vae.model, vae.guide, test) / len(test)
    print(f"held-out ELBO {elbo:.2f}  IWAE(64) {iwae:.2f} nats/image  ({seconds:.1f} s)")
    if not (torch.isfinite(torch.tensor(elbo)) and iwae >= elbo - 1.0):
        raise SystemExit("unexpected: non-finite bound or IWAE(64) well below the ELBO")


if __name__ == "__main__":
    main()
