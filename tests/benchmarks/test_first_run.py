from benchmarks.first_run import pretraining_s


def test_the_pretraining_time_is_read_from_the_drivers_log_lines():
    log = ("[2026-12-02 00:10:00,250][orchestrator.pretrained][INFO] - pretraining resnet26 (width 0.25) on ...\n"
           "train: 100%|...\n"
           "[2026-12-02 00:11:30,750][bap.pretrain][INFO] - pretrained resnet26 (width 0.25) on source: val ...\n")
    assert pretraining_s(log) == 90.5
    assert pretraining_s("no pretraining: the cache was warm") is None
