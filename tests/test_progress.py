"""The progress bar: the counts left on a finished bar are the final ones."""
from datakit.progress import Progress


def test_a_closed_bar_shows_the_last_counts(capsys):
    bar = Progress(total=100, silent=False, sft=True)
    bar.advance(40)
    bar.update_counts(read=500, tokens=7000, written=500)
    bar.advance(60)
    bar.update_counts(read=999, tokens=13986, written=999)  # within 0.2 s of the first: not drawn yet
    bar.close()
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "rows in=999 tokens=13,986 rows=999" in last and "100%" in last


def test_a_silent_bar_prints_nothing(capsys):
    bar = Progress(total=10, silent=True, sft=False)
    bar.advance(10)
    bar.update_counts(read=3, tokens=30, written=3)
    bar.close()
    assert capsys.readouterr().err == ""
