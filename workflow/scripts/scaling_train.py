"""Snakemake adapter: rule scaling_train → preimage.train.train_decoder on a nested subset."""
from preimage import logs

with logs.job(snakemake):
    from preimage.train import train_decoder

    train_decoder(
        snakemake.params.representation,
        snakemake.input.features,
        snakemake.input.images,
        snakemake.output.decoder,
        snakemake.output.log,
        snakemake.params.checkpoint,
        snakemake.params.train,
        subset=snakemake.params.subset,
    )
