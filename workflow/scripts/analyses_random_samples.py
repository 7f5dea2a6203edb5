"""Snakemake adapter: rule random_samples → preimage.analyses.random_samples."""
from preimage import logs

with logs.job(snakemake):
    from preimage import analyses

    common, options = snakemake.params.common, snakemake.params.options
    analyses.random_samples(snakemake.wildcards.rep, snakemake.input.decoder, snakemake.input.features,
                            snakemake.output.csv, snakemake.output.figure, count=options["count"],
                            alpha=options["alpha"], fit_images=options["fit_images"], bins=options["bins"],
                            seed=common["seed"], device=common["device"])
