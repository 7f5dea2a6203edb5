"""Snakemake adapter: rule brightness → preimage.analyses.brightness."""
from preimage import logs

with logs.job(snakemake):
    from preimage import analyses
    from preimage.features import create

    common, rep = snakemake.params.common, snakemake.params.representation
    analyses.brightness(create(rep["name"], **rep["params"]), snakemake.input.decoder, snakemake.input.images,
                        snakemake.output.csv, snakemake.output.figure, factors=snakemake.params.factors,
                        n_show=common["n_show"], seed=common["seed"], device=common["device"])
