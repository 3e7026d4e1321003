"""benchmarks/peers.py: the parsers of FL-bench's log and our metrics.csv, FL-bench's partition file, bad input."""

import pickle
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402

# The tail of an FL-bench main.log as its rich file console writes it (markup stripped, lines padded).
FLBENCH_LOG = """Training... 100%
FedAvg's average time taken by each global epoch: 1 min 2.50 sec.              
FedAvg's total running time: 0 h 2 m 9 s.                                      
==================== FedAvg Experiment Results: ====================            
Display format: (before local fine-tuning) -> (after local fine-tuning)         
 So if finetune_epoch = 0, x.xx% -> 0.00% is normal.                            
 Centralized testing ONLY happens after model aggregation, so the stats between 
'->' are the same.                                                              
{                                                                               
    "1": {                                                                      
        "centralized": {                                                        
            "test": {                                                           
                "loss": "1.8803 -> 1.8803",                                     
                "accuracy": "44.36% -> 44.36%"                                  
            }                                                                   
        }                                                                       
    },                                                                          
    "2": {                                                                      
        "centralized": {                                                        
            "test": {                                                           
                "loss": "1.2036 -> 1.2036",                                     
                "accuracy": "67.49% -> 67.49%"                                  
            }                                                                   
        }                                                                       
    }                                                                           
}                                                                               
==================== FedAvg Max Accuracy ====================                   
centralized:                                                                    
(test) before fine-tuning: 67.49% at epoch 2                                    
"""


def test_flbench_log_gives_round_times_and_centralized_accuracy():
    parsed = peers.parse_flbench_log(FLBENCH_LOG)
    assert parsed["train_s_per_round"] == pytest.approx(62.5)
    assert parsed["loop_s"] == 129
    assert parsed["accuracy_by_round"] == {1: 44.36, 2: 67.49}


def test_flbench_log_without_results_or_server_test_is_an_error():
    unfinished = FLBENCH_LOG[:FLBENCH_LOG.index("FedAvg's total")]
    with pytest.raises(peers.PeerError, match="did the run finish"):
        peers.parse_flbench_log(unfinished)
    client_only = FLBENCH_LOG.replace('"centralized"', '"all_clients"')
    with pytest.raises(peers.PeerError, match="no centralized test accuracy"):
        peers.parse_flbench_log(client_only)


def test_our_metrics_give_mean_round_seconds_and_final_accuracy(tmp_path):
    (tmp_path / "metrics.csv").write_text("round,accuracy,loss,seconds\n1,0.5,1.2,10.0\n2,0.9125,0.3,14.0\n")
    assert peers.parse_ours(tmp_path) == {"rounds": 2, "s_per_round": 12.0, "accuracy": pytest.approx(91.25)}
    (tmp_path / "metrics.csv").write_text("round,accuracy,loss,seconds\n1,0.5,1.2,10.0\n2,,,14.0\n")
    with pytest.raises(peers.PeerError, match="no evaluated final round"):
        peers.parse_ours(tmp_path)


def test_torch_threads_line():
    assert peers.parse_torch_threads("torch_threads 2\nTraining...\n") == 2
    with pytest.raises(peers.PeerError):
        peers.parse_torch_threads("Training...\n")


def test_official_partition_trains_on_our_clients_and_tests_on_the_official_test_images(tmp_path):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    (folder / "partition_md5.txt").write_text("stale")
    ours = (np.array([3, 0, 7]), np.array([1, 2]), np.array([4, 5, 6]))
    peers.write_official_partition(tmp_path, ours, num_train=8, num_test=5)
    with open(folder / "partition.pkl", "rb") as f:
        written = pickle.load(f)  # the file this test just wrote
    assert written["separation"] == {"train": [0, 1, 2], "val": [0, 1, 2], "test": [0, 1, 2], "total": 3}
    for client, indices in zip(written["data_indices"], ours):
        assert client["train"].tolist() == indices.tolist() and len(client["val"]) == 0
    tests = np.concatenate([c["test"] for c in written["data_indices"]])
    assert sorted(tests.tolist()) == [8, 9, 10, 11, 12]
    assert not (folder / "partition_md5.txt").exists()


def test_bad_input_is_one_line_before_any_run(tmp_path, capsys, write_fmnist):
    assert peers.main(["--flbench", str(tmp_path), "--flbench-commit", "abc", "--data-dir", str(tmp_path)]) == 2
    assert "lacks train-images-idx3-ubyte.gz" in capsys.readouterr().err
    write_fmnist(tmp_path, n_train=400)  # MNIST's file names and format, enough for 20 clients
    assert peers.main(["--flbench", str(tmp_path), "--flbench-commit", "abc", "--data-dir", str(tmp_path)]) == 2
    assert "is not an FL-bench checkout" in capsys.readouterr().err
    assert peers.main(["--data-dir", str(tmp_path)]) == 2
    assert "--flbench DIR" in capsys.readouterr().err
    assert peers.main(["--flbench", str(tmp_path), "--data-dir", str(tmp_path), "--sides", "theirs"]) == 2
    assert "--sides takes flbench,ours" in capsys.readouterr().err
    assert peers.main(["--flbench", str(tmp_path), "--data-dir", str(tmp_path), "--extra", "lr=-1"]) == 2
    assert "our run config" in capsys.readouterr().err


def test_recorded_commands_split_back_into_the_arguments_run():
    command = ["python", "-c", peers.OUR_ENTRY.format(threads=2), "run", "--run-config",
               "dataset='mnist' out-dir='/tmp/a b'", "it's $HOME", 'say "hi"']
    line = peers.shell_join(command)
    assert shlex.split(line) == command
    assert "\"dataset='mnist' out-dir='/tmp/a b'\"" in line
