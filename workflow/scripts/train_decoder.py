"""Snakemake adapter: rule train → preimage.train.train_decoder."""
from preimage import devices, logs
from preimage.train import train_decoder

logs.setup(snakemake.log[0])
devices.setup_snakemake_job(snakemake)
train_decoder(
    snakemake.params.representation,
    snakemake.input.features,
    snakemake.input.images,
    snakemake.output.decoder,
    snakemake.output.log,
    snakemake.params.checkpoint,
    snakemake.params.train,
)
