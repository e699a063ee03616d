import cProfile, pstats, sys, threading, time, subprocess
import uvicorn
from bench.overhead.servers import upstream_server, free_port
from gateway.api import create_app
from gateway.config import load_config
up = upstream_server().start()
cfg = load_config("bench/overhead/turnout.yaml", {"UPSTREAM_URL": up.url + "/v1"})
port = free_port()
server = uvicorn.Server(uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools"))
conc = int(sys.argv[1])
def load():
    time.sleep(3)
    subprocess.run([sys.executable, "-c", f"""
import json, uvloop
from bench.overhead.loadgen import Target, run_batch
body = json.dumps({{"model": "small", "messages": [{{"role": "user", "content": "hi"}}], "stream": False}}).encode()
t = Target("t", "127.0.0.1", {port})
b = uvloop.run(run_batch(t, t.request(body), concurrency={conc}, count=2000))
print("rps", len(b.latencies)/b.wall_s, b.failures)
"""], cwd=".")
    server.should_exit = True
threading.Thread(target=load).start()
prof = cProfile.Profile(time.process_time)
prof.enable()
server.run()
prof.disable()
up.stop()
st = pstats.Stats(prof); st.sort_stats("cumulative").print_stats(45)
st.sort_stats("tottime").print_stats(25)
