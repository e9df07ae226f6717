"""benchmarks/gpu_check.py's section, from logs shaped like gpu_check.sh's (the script itself needs a GPU)."""

from benchmarks.gpu_check import section_body


def test_the_section_lists_each_step_its_status_and_every_result_line(tmp_path):
    (tmp_path / "steps").write_text("gpu_tests 0 41\nswitch_overhead 0 80\ndata_loading 124 120\n")
    (tmp_path / "gpu_tests.log").write_text("....\n========== 12 passed, 3 deselected in 30.1s ==========\n")
    (tmp_path / "switch_overhead.log").write_text("| table |\nRESULT switch_overhead_cuda=1.0412\n")
    (tmp_path / "data_loading.log").write_text("partial output\n")
    body = section_body(tmp_path)
    assert "| gpu_tests | ok | 41 | 12 passed, 3 deselected in 30.1s |" in body
    assert "| data_loading | **timed out** | 120 |" in body
    assert "RESULT switch_overhead_cuda=1.0412" in body
