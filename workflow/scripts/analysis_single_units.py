"""Snakemake adapter: rule single_units → preimage.experiments.single_units."""
from preimage import experiments, logs
from preimage.features import categories_of

logs.setup(snakemake.log[0])
common, rep = snakemake.params.common, snakemake.params.representation
experiments.single_units(snakemake.wildcards.rep, snakemake.input.decoder, snakemake.input.features,
                         snakemake.output[0], count=snakemake.params.units,
                         categories=categories_of(rep["name"], rep["params"]["weights"]), device=common["device"])
