"""Snakemake adapter: rule scaling_errors → preimage.scaling.test_errors."""
from preimage import logs

with logs.job(snakemake):
    from preimage.scaling import test_errors

    test_errors(snakemake.input.decoder, snakemake.input.features, snakemake.input.images, snakemake.output[0],
                batch_size=snakemake.params.batch_size, device=snakemake.params.device)
