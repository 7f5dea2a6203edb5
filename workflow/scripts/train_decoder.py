"""Snakemake adapter: rules train and scaling_train → preimage.train.train_decoder."""
from preimage import logs

with logs.job(snakemake):
    from preimage.train import train_decoder

    init = getattr(snakemake.input, "init", None)
    train_decoder(
        snakemake.params.representation,
        snakemake.input.features,
        snakemake.input.images,
        snakemake.output.decoder,
        snakemake.output.log,
        snakemake.params.checkpoint,
        snakemake.params.train,
        loss=getattr(snakemake.params, "loss", None),
        init_from=init[0] if init else None,
        # scaling_train: the nested subset of the training photographs
        subset=getattr(snakemake.params, "subset", None),
    )
