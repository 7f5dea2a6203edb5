"""Snakemake adapter: rule train_autoencoder → preimage.train.train_autoencoder."""
from preimage import logs

with logs.job(snakemake):
    from preimage.train import train_autoencoder

    alexnet = snakemake.params.alexnet
    train_autoencoder(
        snakemake.wildcards.layer,
        snakemake.input.images,
        snakemake.output.decoder,
        snakemake.output.encoder,
        snakemake.output.log,
        snakemake.params.checkpoint,
        snakemake.params.train,
        weights=alexnet["weights"],
        weights_seed=alexnet["seed"],
        crop=alexnet["crop"],
        arch=alexnet["arch"],
        encoder_lr_scale=snakemake.params.encoder_lr_scale,
    )
