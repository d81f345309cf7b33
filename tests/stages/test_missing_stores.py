"""A store that was never made is one line naming the command that makes it."""

import pytest
from click.testing import CliRunner

from skelctl.cli import main
from skelctl.data.store import StoreError
from skelctl.stages import clean, views
from skelctl.stages.common import store_of


def test_a_missing_views_store_names_views_or_prepare(prepared_ntu60, tmp_path):
    with pytest.raises(StoreError) as raised:  # the cleaned sequences are there: views
        store_of(prepared_ntu60, "ntu60-xsub", "25-none")
    assert str(raised.value) == (
        f"{prepared_ntu60}/processed/ntu60/25-none.h5: store file does not exist; make it with "
        f"`skelctl views ntu60 --variant 25-none --data-dir {prepared_ntu60}`")

    result = CliRunner().invoke(main, ["pretrain", "skeletonclr-joint", "--split", "mine-xsub",
                                       "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.strip() == (
        f"Error: {tmp_path}/processed/mine/50-shoulder.h5: store file does not exist; make it "
        f"with `skelctl prepare generic --name mine --raw RAW_FOLDER --variant 50-shoulder "
        f"--data-dir {tmp_path}` (there are no cleaned sequences at "
        f"{tmp_path}/interim/mine/clean.h5 either)")


def test_missing_interim_stores_name_clean_and_parse(tmp_path):
    with pytest.raises(StoreError, match=r"clean.h5: store file does not exist; make it with "
                                         r"`skelctl clean ntu60` \(after `skelctl parse`\)"):
        views.run("ntu60", "50-shoulder", tmp_path)
    with pytest.raises(StoreError, match=r"parsed.h5: store file does not exist; make it with "
                                         r"`skelctl parse nw-ucla --raw RAW_FOLDER`"):
        clean.run("nw-ucla", tmp_path)
