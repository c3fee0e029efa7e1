# Sourced by the scripts that run what they build. `built NAME CARGO-ARGS...`
# builds with cargo and prints the path of the executable NAME it built,
# wherever cargo's configuration puts it: a path guessed as target/release/
# would run a stale binary left there when CARGO_TARGET_DIR, build.target-dir
# or CARGO_BUILD_TARGET_DIR send the build elsewhere. Fails when cargo fails
# or built no such executable.
built() {
    local name=$1 path
    shift
    path=$(cargo build "$@" --message-format=json-render-diagnostics \
        | sed -n "s/.*\"executable\":\"\([^\"]*\/$name\)\".*/\1/p" | tail -n 1)
    [ -x "$path" ] || { echo "$(basename "$0"): cargo built no $name executable" >&2; return 1; }
    echo "$path"
}
