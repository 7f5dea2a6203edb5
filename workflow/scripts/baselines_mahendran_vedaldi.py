"""Snakemake adapter: rule mahendran_vedaldi → preimage.experiments.mahendran_vedaldi."""
from preimage import logs

with logs.job(snakemake):
    from preimage import experiments
    from preimage.features import create
    from preimage.optimize import MVConfig

    common, rep, options = snakemake.params.common, snakemake.params.representation, dict(snakemake.params.optimisation)
    images = options.pop("images")
    config = MVConfig(**{k: v for k, v in options.items() if v is not None})
    experiments.mahendran_vedaldi(snakemake.wildcards.rep, create(rep["name"], **rep["params"]), snakemake.input.decoder,
                                  snakemake.input.images, snakemake.output.csv, snakemake.output.images,
                                  snakemake.output.figure, config, images=images, n_show=common["n_show"],
                                  seed=common["seed"], device=snakemake.params.device)
