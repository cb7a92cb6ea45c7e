"""``python -m tests.llama_server ARGS``: llama-cpp-python's OpenAI-compatible server, loading weights as
agility's local backend does (without repacking, which crashes llama.cpp on AMX CPUs)."""

if __name__ == "__main__":
    from llama_cpp.server.__main__ import main

    from agility_mlflow.backends.local import no_weight_repacking

    with no_weight_repacking():
        main()
