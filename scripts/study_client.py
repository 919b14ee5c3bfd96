#!/usr/bin/env python3
"""The deterrence study's client of `lineage serve` (Python's standard library only).

  study_client.py sample URL PROMPTS OUT.jsonl [--max-tokens N] [--temperature T] [--threads J]
      one completion per prompt (seed = line number), written as {"prompt", "completion"} lines
  study_client.py greedy URL PROMPTS OUT.jsonl [--max-tokens N]
      the greedy answer of each prompt, with the prompt's and the answer's token ids
  study_client.py agree URL GREEDY.jsonl
      prints the share of answer tokens that are this server's top-1 choice given the prompt and
      the answer before them (teacher-forced agreement with GREEDY's answers), as JSON
"""
import argparse
import concurrent.futures
import json
import sys
import urllib.error
import urllib.request


MODEL = {}


def post(url, body):
    if url not in MODEL:  # the one model the server answers as
        with urllib.request.urlopen(url + "/models", timeout=60) as r:
            MODEL[url] = json.loads(r.read())["data"][0]["id"]
    body = dict(body, model=MODEL[url])
    req = urllib.request.Request(url + "/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit(f"study_client: {url}/completions answered {e.code}: {e.read().decode(errors='replace')[:300]}")


def ids_of(tokens):
    return [int(t[len("token_id:"):]) for t in tokens]


def read_prompts(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def sample(a):
    prompts = read_prompts(a.prompts)

    def one(i):
        j = post(a.url, {"prompt": prompts[i], "max_tokens": a.max_tokens,
                         "temperature": a.temperature, "top_p": 1, "seed": i})
        return {"prompt": prompts[i], "completion": j["choices"][0]["text"]}

    with concurrent.futures.ThreadPoolExecutor(a.threads) as ex:
        rows = list(ex.map(one, range(len(prompts))))
    with open(a.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def greedy(a):
    prompts = read_prompts(a.prompts)

    def one(p):
        echo = post(a.url, {"prompt": p, "max_tokens": 0, "echo": True, "logprobs": 0,
                            "return_tokens_as_token_ids": True})
        prompt_ids = ids_of(echo["choices"][0]["logprobs"]["tokens"])
        j = post(a.url, {"prompt": prompt_ids, "max_tokens": a.max_tokens, "temperature": 0,
                         "logprobs": 0, "return_tokens_as_token_ids": True})
        return {"prompt": p, "prompt_ids": prompt_ids, "answer_ids": ids_of(j["choices"][0]["logprobs"]["tokens"])}

    with concurrent.futures.ThreadPoolExecutor(a.threads) as ex:
        rows = list(ex.map(one, prompts))
    with open(a.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def agree(a):
    with open(a.greedy, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    def one(r):
        ids = r["prompt_ids"] + r["answer_ids"]
        j = post(a.url, {"prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 1,
                         "return_tokens_as_token_ids": True})
        top = j["choices"][0]["logprobs"]["top_logprobs"]
        n = same = 0
        for t in range(len(r["prompt_ids"]), len(ids)):
            best = max(top[t].items(), key=lambda kv: kv[1])[0]
            n += 1
            same += int(best[len("token_id:"):]) == ids[t]
        return n, same

    with concurrent.futures.ThreadPoolExecutor(a.threads) as ex:
        counts = list(ex.map(one, rows))
    n = sum(c[0] for c in counts)
    same = sum(c[1] for c in counts)
    print(json.dumps({"tokens": n, "agreement": same / max(n, 1)}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("sample", "greedy"):
        s = sub.add_parser(name)
        s.add_argument("url")
        s.add_argument("prompts")
        s.add_argument("out")
        s.add_argument("--max-tokens", type=int, default=128)
        s.add_argument("--temperature", type=float, default=1.0)
        s.add_argument("--threads", type=int, default=16)
    s = sub.add_parser("agree")
    s.add_argument("url")
    s.add_argument("greedy")
    s.add_argument("--threads", type=int, default=16)
    a = p.parse_args()
    {"sample": sample, "greedy": greedy, "agree": agree}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
