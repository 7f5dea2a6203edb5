"""Snakemake adapter: rule dark_knowledge → preimage.analyses.dark_knowledge."""
from preimage import logs

with logs.job(snakemake):
    from preimage import analyses
    from preimage.features import categories_of

    common, rep = snakemake.params.common, snakemake.params.representation
    analyses.dark_knowledge(snakemake.input.decoder, snakemake.input.features, snakemake.input.images,
                            snakemake.output.csv, snakemake.output.figure,
                            categories=categories_of(rep["name"], rep["params"]["weights"]), k=snakemake.params.k,
                            n_show=common["n_show"], seed=common["seed"], device=common["device"],
                            representation_name=rep["name"])
