"""Runs a training binary as a local multi-worker cluster: N processes on this machine, each with
its TF_CONFIG (free localhost ports), for trying `--strategy=multi_worker` and for the tests.

  python bin/launch_local_cluster.py --workers=2 -- \\
      bin/train_text.py --strategy=multi_worker --data_dir=data --model_dir=runs/two-workers

Worker 0 is the chief: its output is passed through; the others' lines are prefixed with
"[worker i]". If a worker fails, the others are given --grace_seconds to fail on their own (they
do, with an error naming the lost peer) and are then stopped. Exits with the first failed
worker's status, or 0 when all succeed. On several machines, set TF_CONFIG yourself (README.md).
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

flags.DEFINE_integer("workers", 2, "Worker processes.", lower_bound=1)
flags.DEFINE_float("grace_seconds", 120.0, "After a worker fails, how long the others may run "
                   "before they are stopped.", lower_bound=0.0)
FLAGS = flags.FLAGS


def free_ports(count):
  """`count` distinct ports that were free a moment ago."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(("localhost", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_config(addresses, index):
  return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def _relay(stream, prefix):
  for line in stream:
    sys.stdout.write(prefix + line)
    sys.stdout.flush()


def launch(command, workers, grace_seconds):
  """Starts `command` once per worker and waits; returns the exit status (see the module doc)."""
  addresses = [f"localhost:{port}" for port in free_ports(workers)]
  processes = []
  for index in range(workers):
    env = dict(os.environ, TF_CONFIG=tf_config(addresses, index))
    prefix = "" if index == 0 else f"[worker {index}] "
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=_relay, args=(process.stdout, prefix), daemon=True).start()
    processes.append(process)
    print(f"launch_local_cluster: worker {index} at {addresses[index]}, pid {process.pid}",
          file=sys.stderr, flush=True)
  failed_at, status = None, 0
  while any(p.poll() is None for p in processes):
    for index, process in enumerate(processes):
      code = process.poll()
      if code and failed_at is None:
        failed_at, status = time.time(), code
        print(f"launch_local_cluster: worker {index} exited with status {code}; "
              f"stopping the others within {grace_seconds:.0f} s.", file=sys.stderr, flush=True)
    if failed_at is not None and time.time() - failed_at > grace_seconds:
      for process in processes:
        if process.poll() is None:
          process.kill()
    time.sleep(0.2)
  for index, process in enumerate(processes):
    if process.returncode and not status:
      status = process.returncode
  return status


def main(argv):
  command = argv[1:]
  if not command:
    raise app.UsageError("Give the command after --, e.g. -- bin/train_text.py ...")
  if command[0].endswith(".py"):
    command = [sys.executable] + command
  sys.exit(launch(command, FLAGS.workers, FLAGS.grace_seconds))


if __name__ == "__main__":
  app.run(main)
