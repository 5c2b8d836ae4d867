// kube-apiserver exactly as Kubernetes' cmd/kube-apiserver/ builds it: the same command and the same
// registrations (JSON logs, client-go and version metrics), so the binary behaves as upstream's.
package main

import (
	"os"
	_ "time/tzdata" // CronJob time zones, as upstream's main imports

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
