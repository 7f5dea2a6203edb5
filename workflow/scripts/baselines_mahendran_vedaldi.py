"""Snakemake adapter: rule mahendran_vedaldi → preimage.baselines.mahendran_vedaldi."""
from preimage import logs

with logs.job(snakemake):
    from preimage import baselines
    from preimage.features import create

    common, rep, options = snakemake.params.common, snakemake.params.representation, dict(snakemake.params.optimisation)
    images = options.pop("images")
    config = baselines.MVConfig(**{k: v for k, v in options.items() if v is not None})
    # rep["name"] is the configured name of the base representation (fc6 for fc6-ae, from the
    # catalog): it picks the optimisation's default weights and learning rate
    baselines.mahendran_vedaldi(snakemake.wildcards.rep, create(rep["name"], **rep["params"]), rep["name"],
                                snakemake.input.decoder, snakemake.input.images, snakemake.output.csv,
                                snakemake.output.images, snakemake.output.figure, config, images=images,
                                n_show=common["n_show"], seed=common["seed"], device=snakemake.params.device)
