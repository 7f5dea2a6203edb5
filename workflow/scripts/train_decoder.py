"""Snakemake adapter: rule train → preimage.train.train_decoder."""
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
        loss=snakemake.params.loss,
        init_from=snakemake.input.init[0] if snakemake.input.init else None,
    )
