"""Snakemake adapter: rule hue_shift → preimage.analyses.hue_shift."""
from preimage import logs

with logs.job(snakemake):
    from preimage import analyses
    from preimage.features import create

    common, rep = snakemake.params.common, snakemake.params.representation
    representation = create(rep["name"], **rep["params"])
    analyses.hue_shift(representation, snakemake.input.decoder, snakemake.input.images, snakemake.output.csv,
                       snakemake.output.figure, degrees=snakemake.params.degrees, categories=representation.categories,
                       n_show=common["n_show"], seed=common["seed"], device=common["device"],
                       representation_name=rep["name"])
