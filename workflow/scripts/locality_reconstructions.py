"""Snakemake adapter: rule locality → preimage.locality.locality."""
from preimage import logs

with logs.job(snakemake):
    from preimage import locality
    from preimage.features import create

    common, rep, options = snakemake.params.common, snakemake.params.representation, dict(snakemake.params.options)
    config = locality.optimisation_config(options.pop("iterations"), dict(snakemake.params.optimisation))
    # rep["name"] is the configured name of the base representation: it picks the optimisation's defaults
    locality.locality(snakemake.wildcards.rep, create(rep["name"], **rep["params"]), rep["name"],
                      snakemake.input.decoder, snakemake.input.images, snakemake.output.csv,
                      snakemake.output.figure, config, images=options["images"], window=options["window"],
                      channels=options["channels"], n_show=common["n_show"], seed=common["seed"],
                      device=common["device"])
