package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// parseFlags parses args into fs, then fills every flag not given on the command line from the
// environment (APERTURE_<FLAG>, dashes as underscores) or, failing that, from the YAML file named by the
// flag "config" if fs has one. The YAML file is a flat map keyed by flag name.
//
// Flags and positional arguments may be interleaved ("case release CASE --fields a,b"); the positional
// arguments are returned in order.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, error) {
	fs.SetOutput(stderr)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if err := fillFromEnvAndFile(fs); err != nil {
		return nil, err
	}
	return positional, nil
}

// parseFlagsNoArgs is parseFlags for commands that take no positional arguments.
func parseFlagsNoArgs(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	pos, err := parseFlags(fs, args, stderr)
	if err == nil && len(pos) > 0 {
		err = usagef("unexpected argument %q", pos[0])
	}
	return err
}

// addConfigFlag adds --config to fs.
func addConfigFlag(fs *flag.FlagSet) {
	fs.String("config", "", "YAML file with settings (keys are flag names)")
}

func fillFromEnvAndFile(fs *flag.FlagSet) error {
	set := map[string]bool{}
	// Two names for one setting (--tz and --report-tz) share a Value: once either is given, the
	// other's environment variable or config key does not override it.
	given := map[flag.Value]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name], given[f.Value] = true, true })
	var file map[string]any
	cfgName := ""
	if f := fs.Lookup("config"); f != nil {
		cfgName = f.Value.String()
		if !set["config"] {
			if v, ok := os.LookupEnv(envName("config")); ok {
				cfgName = v
			}
		}
	}
	if cfgName != "" {
		b, err := os.ReadFile(cfgName)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		if err := yaml.Unmarshal(b, &file); err != nil {
			return fmt.Errorf("config %s: %w", cfgName, err)
		}
		for k := range file {
			if fs.Lookup(k) == nil {
				return fmt.Errorf("config %s: unknown setting %q (settings are the flag names of this command)", cfgName, k)
			}
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || given[f.Value] || f.Name == "config" || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s: %w", envName(f.Name), e)
			}
			given[f.Value] = true
			return
		}
		if v, ok := file[f.Name]; ok {
			if e := f.Value.Set(fmt.Sprint(v)); e != nil {
				err = fmt.Errorf("config %s: %s: %w", cfgName, f.Name, e)
			}
			given[f.Value] = true
		}
	})
	if err != nil {
		return usageError{err}
	}
	return nil
}

func envName(flagName string) string {
	return "APERTURE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}
