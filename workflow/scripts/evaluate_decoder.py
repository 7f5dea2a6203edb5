"""Snakemake adapter: rule evaluate → preimage.evaluate.evaluate_decoder (error.csv, reconstructions.h5)."""
from preimage import logs

with logs.job(snakemake):
    from preimage.evaluate import evaluate_decoder

    options = snakemake.params.options
    evaluate_decoder(
        snakemake.params.representation,
        snakemake.input.decoder,
        snakemake.input.test_features,
        snakemake.input.test_images,
        snakemake.input.train_features,
        snakemake.input.train_images,
        snakemake.output.error,
        snakemake.output.reconstructions,
        batch_size=options["batch_size"],
        device=options["device"],
        nn_limit=options["nn_limit"],
        seed=options["seed"],
        feature_representation=snakemake.params.feature_space,
    )
