#!/usr/bin/env python3
"""A small task runner that reports its tasks' status changes through hookd.

It walks one task of each kind (an image, a video and a music generation
task) through NOT_START -> IN_PROGRESS -> SUCCESS or FAILURE and submits one
callback per change to hookd's unix socket, with `key` set to the task id so
that hookd delivers the changes of one task strictly in order.

Only the standard library is used: any language that can speak HTTP over a
unix socket can do the same.

    python3 examples/task_runner.py --socket ./hookd.sock --url http://127.0.0.1:8080/hook
"""

import argparse
import http.client
import json
import socket
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket: hookd's API is plain HTTP."""

    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def submit(socket_path, url, task_id, payload):
    """Hands one callback to hookd; returns the delivery id."""
    body = json.dumps({"url": url, "key": task_id, "payload": payload})
    connection = UnixConnection(socket_path)
    connection.request("POST", "/v1/deliveries", body, {"Content-Type": "application/json"})
    reply = connection.getresponse()
    answer = json.loads(reply.read() or b"{}")
    connection.close()
    if reply.status not in (200, 201):
        raise SystemExit(f"hookd refused the callback: {answer}")
    return answer["id"]


def image_task(task_id, now_ms):
    """Midjourney-style image task callbacks."""
    base = {"id": task_id, "action": "IMAGINE", "prompt": "a lighthouse at dawn",
            "imageUrl": "", "progress": "0%", "failReason": "",
            "submitTime": now_ms, "startTime": 0, "finishTime": 0}
    yield dict(base, status="NOT_START")
    yield dict(base, status="IN_PROGRESS", progress="50%", startTime=now_ms + 1000)
    yield dict(base, status="SUCCESS", progress="100%", startTime=now_ms + 1000,
               finishTime=now_ms + 9000, imageUrl=f"https://cdn.example.com/{task_id}.png")


def video_task(task_id, now_s):
    """Kling/Luma/Runway-style video task callbacks."""
    empty = {"video_url": "", "cover_url": "", "duration": 0}
    base = {"id": task_id, "type": "text2video", "created_at": now_s}
    yield dict(base, status="NOT_START", output=empty, updated_at=now_s)
    yield dict(base, status="IN_PROGRESS", output=empty, updated_at=now_s + 5)
    yield dict(base, status="SUCCESS", updated_at=now_s + 60, output={
        "video_url": f"https://cdn.example.com/{task_id}.mp4",
        "cover_url": f"https://cdn.example.com/{task_id}.jpg", "duration": 5.0})


def music_task(task_id):
    """Suno-style music task callbacks; this one fails."""
    empty = {"audio_url": "", "title": "", "duration": 0}
    yield {"id": task_id, "status": "NOT_START", "output": empty}
    yield {"id": task_id, "status": "IN_PROGRESS", "output": dict(empty, title="Harbour Lights")}
    yield {"id": task_id, "status": "FAILURE", "output": dict(empty, title="Harbour Lights")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default="./hookd.sock", help="hookd's API socket")
    parser.add_argument("--url", required=True, help="the receiver's callback URL")
    parser.add_argument("--prefix", default="task", help="prefix of the task ids")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between changes")
    args = parser.parse_args()

    now_ms = int(time.time() * 1000)
    tasks = {
        f"{args.prefix}-image": image_task(f"{args.prefix}-image", now_ms),
        f"{args.prefix}-video": video_task(f"{args.prefix}-video", now_ms // 1000),
        f"{args.prefix}-music": music_task(f"{args.prefix}-music"),
    }

    # The three tasks progress side by side, as they would in a real runner.
    while tasks:
        for task_id, changes in list(tasks.items()):
            payload = next(changes, None)
            if payload is None:
                del tasks[task_id]
                continue
            delivery = submit(args.socket, args.url, task_id, payload)
            print(f"{task_id} {payload['status']} -> {delivery}", flush=True)
        time.sleep(args.pause)
    return 0


if __name__ == "__main__":
    sys.exit(main())
