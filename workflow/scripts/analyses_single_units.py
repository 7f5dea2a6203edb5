"""Snakemake adapter: rule single_units → preimage.analyses.single_units."""
from preimage import logs

with logs.job(snakemake):
    from preimage import analyses
    from preimage.features import categories_of

    common, rep = snakemake.params.common, snakemake.params.representation
    analyses.single_units(snakemake.wildcards.rep, snakemake.input.decoder, snakemake.input.features,
                          snakemake.output[0], count=snakemake.params.units,
                          categories=categories_of(rep["name"], rep["params"]["weights"]), device=common["device"])
