// etcd for the end-to-end control plane: upstream's own entry point (etcdmain.Main), in a module
// of its own because Kubernetes' module graph would otherwise lift etcd's server to the
// version Kubernetes' client pins rather than the etcd release pinned here.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
