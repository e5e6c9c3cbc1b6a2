"""One VAE gradient step: pplx ELBO vs Pyro Trace_ELBO vs the same computation hand-written.

VAE with MLP 784-256-16 (Bernoulli pixels, Gaussian latents), one reparameterised particle,
Adam. Data: scikit-learn's digits upsampled to 28x28 and binarised. Three implementations of
the same step are timed in this one run at batch sizes 128 and 1024:

* hand-written PyTorch (encoder -> rsample -> decoder -> log p - log q, backward, Adam);
* pplx: ``pplx.objectives.ELBO().differentiable_loss`` on the Pyro model/guide + torch Adam;
* pplx compiled: the same with ``ELBO().compile()`` (the recorded ATen program replayed
  without Pyro's handlers);
* Pyro: ``pyro.infer.SVI(..., Trace_ELBO(), pyro.optim.Adam)``.

Each implementation keeps its own parameter store; they are timed in interleaved rounds and
the fastest round of each is reported.

    python benchmarks/vae_step.py [--steps 20] [--rounds 5] [--device cpu|cuda] [--batch 128 1024]
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
from timing import interleaved_ms

from pplx.datasets import binarized_digits
from pplx.models import VAE
from pplx.objectives import ELBO


def handwritten_step(vae, x, opt):
    def step():
        opt.zero_grad()
        loc, raw = vae.encoder(x).chunk(2, -1)
        scale = torch.nn.functional.softplus(raw) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = vae.decoder(z)
        log_px = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x, reduction="none"
        ).sum(-1)
        log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = dist.Normal(loc, scale).log_prob(z).sum(-1)
        loss = -(log_px + log_pz - log_qz).sum()
        loss.backward()
        opt.step()

    return step


def pplx_step(vae, x, opt, objective):
    def step():
        opt.zero_grad()
        objective.differentiable_loss(vae.model, vae.guide, x).backward()
        opt.step()

    return step


def pyro_step(vae, x):
    optim = pyro.optim.Adam({"lr": 1e-3})
    svi = pyro.infer.SVI(vae.model, vae.guide, optim, pyro.infer.Trace_ELBO())
    return lambda: svi.step(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timing round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--no-validation",
        action="store_true",
        help="pyro.enable_validation(False) (skips the support checks of every log_prob)",
    )
    args = parser.parse_args()
    if args.no_validation:
        pyro.enable_validation(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = binarized_digits(28).to(args.device)
    print(
        f"device={args.device} steps={args.steps} threads={torch.get_num_threads()} "
        f"validation={not args.no_validation}"
    )
    header = ["batch", "hand ms", "pplx ms", "compiled", "pyro ms", "pplx/hand", "comp/hand"]
    header += ["pyro/hand"]
    print(" ".join(f"{h:>10}" for h in header))
    for batch in args.batch:
        x = data[:batch] if batch <= len(data) else data.repeat(batch // len(data) + 1, 1)[:batch]
        steps = {}
        for name in ("hand", "pplx", "compiled", "pyro"):
            state = {"params": {}, "constraints": {}}  # each implementation its own store
            with pyro.get_param_store().scope(state):
                pyro.set_rng_seed(0)
                vae = VAE().to(args.device)
                if name == "hand":
                    step = handwritten_step(vae, x, torch.optim.Adam(vae.parameters(), lr=1e-3))
                elif name in ("pplx", "compiled"):
                    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
                    objective = ELBO(max_plate_nesting=1)
                    if name == "compiled":
                        objective = objective.compile()
                    step = pplx_step(vae, x, opt, objective)
                else:
                    step = pyro_step(vae, x)
            sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

            def timed(step=step, sync=sync, state=state):
                with pyro.get_param_store().scope(state):
                    step()
                sync()

            steps[name] = timed
        times = interleaved_ms(steps, args.steps, rounds=args.rounds, warmup=10)
        hand = times["hand"]
        print(
            f"{batch:>10} {hand:10.3f} {times['pplx']:10.3f} {times['compiled']:10.3f} "
            f"{times['pyro']:10.3f} {times['pplx'] / hand:10.2f} "
            f"{times['compiled'] / hand:10.2f} {times['pyro'] / hand:10.2f}"
        )


if __name__ == "__main__":
    main()
