#!/usr/bin/env bash
# pin-images.sh: pin every base image of the Dockerfiles to the digest of
# its tag's multi-platform index, or move existing pins to the tag's
# current digest (the update path: run it again, review, commit).
#
#   scripts/pin-images.sh [deploy/docker/*.Dockerfile]
#
# A FROM line keeps its tag (and its ${VAR} references) and gets
# @sha256:<digest>; an "# unpinned: ..." comment right above it (the
# documented exception of a repository built offline) is dropped. ${VAR}
# in an image is expanded with the file's `ARG VAR=default` for the lookup
# only, so after changing GO_VERSION run this again.
#
# The digest comes from $DIGEST_CMD IMAGE if set (tests), else
# `crane digest IMAGE`, else `docker buildx imagetools inspect IMAGE`.
# Both need registry access.
set -euo pipefail

cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
	set -- deploy/docker/*.Dockerfile
fi

resolve() {
	local image=$1 digest
	if [ -n "${DIGEST_CMD:-}" ]; then
		digest=$($DIGEST_CMD "$image")
	elif command -v crane >/dev/null 2>&1; then
		digest=$(crane digest "$image")
	elif command -v docker >/dev/null 2>&1; then
		digest=$(docker buildx imagetools inspect "$image" --format '{{.Manifest.Digest}}')
	else
		echo "pin-images: need crane or docker buildx to look up $image" >&2
		return 1
	fi
	digest=${digest//\"/}
	if ! [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
		echo "pin-images: $image: not a digest: $digest" >&2
		return 1
	fi
	printf '%s\n' "$digest"
}

for file in "$@"; do
	declare -A args=()
	out=()
	mapfile -t lines <"$file"
	for line in "${lines[@]}"; do
		if [[ $line =~ ^ARG[[:space:]]+([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
			args[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
		fi
		if [[ $line =~ ^FROM[[:space:]] ]]; then
			# Drop the exception note above an unpinned FROM.
			if [ ${#out[@]} -gt 0 ] && [[ ${out[-1]} =~ ^#[[:space:]]unpinned: ]]; then
				unset 'out[-1]'
				out=("${out[@]}")
			fi
			read -r -a words <<<"$line"
			for i in "${!words[@]}"; do
				w=${words[$i]}
				[ "$i" -eq 0 ] && continue
				[[ $w == --* ]] && continue
				ref=${w%@sha256:*}
				[ "$ref" = scratch ] && break
				lookup=$ref
				while [[ $lookup =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
					name=${BASH_REMATCH[1]}
					if [ -z "${args[$name]+set}" ]; then
						echo "pin-images: $file: ${name} has no default in an ARG line" >&2
						exit 1
					fi
					lookup=${lookup//\$\{$name\}/${args[$name]}}
				done
				digest=$(resolve "$lookup")
				words[$i]="$ref@$digest"
				echo "$file: $lookup -> $digest" >&2
				break
			done
			line="${words[*]}"
		fi
		out+=("$line")
	done
	printf '%s\n' "${out[@]}" >"$file"
	unset args
done
