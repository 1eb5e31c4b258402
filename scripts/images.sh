# Sourced by scripts/e2e-compose.sh and scripts/e2e-helm.sh: which image each service of the stack runs.
#
# official_or_stand_in VAR OFFICIAL STAND_IN DIR: VAR as given; else OFFICIAL when it is here or can be pulled; else
# STAND_IN, built from DIR's Dockerfile on Debian (DEBIAN_IMAGE) when it is not here yet. Exported, and printed.
official_or_stand_in() {
    local var=$1 official=$2 stand_in=$3 dir=$4
    if [ -z "${!var:-}" ]; then
        if docker image inspect "$official" >/dev/null 2>&1 || timeout 60 docker pull --quiet "$official" >/dev/null 2>&1; then
            printf -v "$var" '%s' "$official"
        else
            printf -v "$var" '%s' "$stand_in"
            if ! docker image inspect "$stand_in" >/dev/null 2>&1; then
                echo "images: no $official to pull: building the stand-in $stand_in ($dir/Dockerfile)"
                docker build --quiet -t "$stand_in" --build-arg "DEBIAN_IMAGE=${DEBIAN_IMAGE:-local/debian:bookworm}" \
                    "$dir" </dev/null >/dev/null
            fi
        fi
    fi
    export "${var?}"
    echo "images: $var=${!var}"
}
