use super::*;

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/cgroup/",
                $name
            )),
        )
    };
}

fn in_pod(uid: &str, container: &str) -> Option<PodContainer> {
    Some(PodContainer {
        pod_uid: Some(uid.to_owned()),
        container_id: container.to_owned(),
    })
}

#[test]
fn every_runtime_driver_and_cgroup_version_gives_the_pod_and_container() {
    // The expected values are written out from the fixtures (see tests/data/cgroup/README.md):
    // the UID with its dashes back, the 64-hex id without the runtime's prefix and suffix.
    let cases = [
        (
            fixture!("containerd-systemd-v2.txt"),
            "3f1e7c2a-9b4d-4e8a-a1c5-6d2f0b7e9a13",
            "451132b560487f8c91e58101aebe00a881ade009a28fd6ee79216f4ddd6b7562",
        ),
        (
            fixture!("containerd-systemd-v1.txt"),
            "b7c0d5e2-1f3a-4c6b-9e8d-2a4f6c8e0b1d",
            "cf1ae8d7980913d50f110a21d52008427c84be577607e7d2bf2157feb39aa905",
        ),
        (
            fixture!("containerd-cgroupfs-v2.txt"),
            "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
            "5be345b3279e28a3b3d31fa195ce15c031c5d396cfc961765441c94aa4fbe704",
        ),
        (
            fixture!("containerd-cgroupfs-v1.txt"),
            "0a9e8d7c-6b5a-4f3e-8d2c-1b0a9f8e7d6c",
            "6c2a34e94ff73e106b43e0dc6b3e77148b7b653e4e49f900a6f0718ccb2da4a7",
        ),
        (
            fixture!("crio-systemd-v2.txt"),
            "e4d3c2b1-a0f9-4e8d-9c7b-6a5f4e3d2c1b",
            "98fc6075acf2dac9bcd0b9d829432a49bae9676d09b450aca3db6ae194aef08c",
        ),
        (
            fixture!("crio-systemd-v1.txt"),
            "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80",
            "43308d8a65424189dbef83bb1e37d4a808a86575f5cc1b031ecc396d88a2a7d1",
        ),
        (
            fixture!("crio-cgroupfs-v2.txt"),
            "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e",
            "d44f981d188c3647a4f1a4c605e84faa7dec182f0e25c32bf1a8e3e72050c289",
        ),
        (
            fixture!("crio-cgroupfs-v1.txt"),
            "9c8b7a6f-5e4d-4c3b-a2a1-0f9e8d7c6b5a",
            "99c8647c99b251ad7e4a5889681ad5d78da6d4b86fa25748a1124aa608eccb02",
        ),
        (
            fixture!("docker-systemd-v2.txt"),
            "7e6d5c4b-3a2f-4e1d-8c0b-9a8f7e6d5c4b",
            "69823f5d8fd37bb8807ad52e57d3d0b5d2c828e50131390b3ae2e24c67cb2a07",
        ),
        (
            // An old kubelet that did not escape the UID's dashes in the slice name.
            fixture!("docker-systemd-v1.txt"),
            "2c48913c-b29f-11e7-9350-020968147796",
            "b2a2b14d35e1c79d1ff6491b33dd30d413e89f75d4fa7c5563bb348aa2a114a8",
        ),
        (
            fixture!("docker-cgroupfs-v1.txt"),
            "c1d2e3f4-a5b6-4c7d-8e9f-a0b1c2d3e4f5",
            "f4f0b3caffa8f2c594d1bdd814d4a065d9e517ef0b54ae9b2ff0e46432e0ece0",
        ),
        (
            // Not the kind node's own docker id (7232fa5b…), which comes first in the path.
            fixture!("kind-containerd-v1.txt"),
            "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf81",
            "40bc9894976106fdc94ec903e04c7ab6c5ea61ddcd1865d8320100f7a1efeb16",
        ),
        (
            fixture!("kind-containerd-v2.txt"),
            "f0e1d2c3-b4a5-4968-8776-a5b4c3d2e1f0",
            "498f960aade92c0065489cbfb7f47332ae7e4eda852a00d469a9c799c604e934",
        ),
        (
            fixture!("containerd-cgroupns-v2.txt"),
            "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d",
            "ff9b42366db4b520c7836f8afa98e2f990e5c1ea09b9f0c6c916101279bda832",
        ),
        (
            fixture!("static-pod-containerd-systemd-v2.txt"),
            "6f1a2b3c4d5e6f708192a3b4c5d6e7f8",
            "a8a820fbada81c53d65a0c50e0f2a499f0edd10f42e4e1b28784619f74d0452f",
        ),
    ];
    for ((name, contents), uid, container) in cases {
        assert_eq!(parse(contents), Ok(in_pod(uid, container)), "{name}");
    }
}

#[test]
fn a_cgroup_namespace_can_hide_the_pod_but_not_the_container() {
    let (name, contents) = fixture!("crio-cgroupns-v2.txt");
    assert_eq!(
        parse(contents),
        Ok(Some(PodContainer {
            pod_uid: None,
            container_id: "3fd45f3a58387109e4b6c2a18d0d28da9a999762892f8273a66a88712df2ee9e".into()
        })),
        "{name}"
    );
}

#[test]
fn a_process_outside_any_pod_gives_none() {
    for (name, contents) in [
        fixture!("host-session-v2.txt"),
        fixture!("host-service-v1.txt"),
        fixture!("plain-docker-v1.txt"),
        fixture!("plain-docker-systemd-v2.txt"),
        fixture!("crio-conmon-v2.txt"),
        fixture!("pod-level-v2.txt"),
    ] {
        assert_eq!(parse(contents), Ok(None), "{name}");
    }
    assert_eq!(parse(""), Ok(None));
    assert_eq!(parse("0::/\n"), Ok(None));
    // A relative path to a host service is no container either.
    assert_eq!(parse("0::/../../system.slice/sshd.service\n"), Ok(None));
}

#[test]
fn lines_that_name_different_containers_are_refused() {
    let a = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let b = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    let uid = "11111111-2222-4333-8444-555555555555";
    let other = "11111111-2222-4333-8444-666666666666";
    let two_containers =
        format!("2:memory:/kubepods/pod{uid}/{a}\n1:name=systemd:/kubepods/pod{uid}/{b}\n");
    let err = parse(&two_containers).unwrap_err();
    assert!(
        err.to_string().contains(a) && err.to_string().contains(b),
        "{err}"
    );
    let two_pods =
        format!("2:memory:/kubepods/pod{uid}/{a}\n1:name=systemd:/kubepods/pod{other}/{a}\n");
    assert!(parse(&two_pods).is_err());
    // The same container with and without its pod in view is one container.
    let partial = format!("2:memory:/kubepods/pod{uid}/{a}\n0::/../cri-containerd-{a}.scope\n");
    assert_eq!(parse(&partial), Ok(in_pod(uid, a)));
}

#[test]
fn ids_of_the_wrong_shape_are_not_containers_or_pods() {
    let uid = "11111111-2222-4333-8444-555555555555";
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    for path in [
        // 63 and 65 hex digits.
        format!("/kubepods/pod{uid}/{}", &id[1..]),
        format!("/kubepods/pod{uid}/{id}0"),
        // Upper case is not how runtimes write ids.
        format!("/kubepods/pod{uid}/{}", id.to_uppercase()),
        // A UID with a group of the wrong length, or not hex.
        format!("/kubepods/pod1111111-2222-4333-8444-555555555555/{id}"),
        format!("/kubepods/pod1111111g-2222-4333-8444-555555555555/{id}"),
        // A slice that is not the kubelet's.
        format!(
            "/system.slice/other-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        ),
        // An unknown runtime's scope.
        format!(
            "/kubepods.slice/kubepods-pod{}.slice/libpod-{id}.scope",
            uid.replace('-', "_")
        ),
    ] {
        assert_eq!(parse(&format!("0::{path}\n")), Ok(None), "{path}");
    }
}

#[test]
fn garbage_never_panics_and_only_whole_lines_count() {
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let garbage = [
        "",
        ":",
        "::",
        ":::::",
        "no colons at all",
        "0:",
        "\0\0\0",
        "0::pod",
        "0::/kubepods/pod",
        "0::/kubepods.slice/-pod.slice/x",
        "0::/kubepods.slice/kubepods--pod.slice",
        "0::/.slice/.scope",
        "0::/kubepods/podé11111-2222-4333-8444-555555555555/x",
        "0::/kubepods-podß.slice/crio-ü.scope",
        "0::/../../../../..",
        "0::////",
        "12:memory:/kubepods/pod11111111-2222-4333-8444-555555555555",
    ];
    for line in garbage {
        assert_eq!(parse(line), Ok(None), "{line:?}");
    }
    // Every prefix of a real file, cut anywhere (even inside a character), parses or gives none.
    let real = format!(
        "1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod11111111_2222_4333_8444_555555555555.slice/cri-containerd-{id}.scope\n0::/ünïcode\n"
    );
    for cut in 0..=real.len() {
        let bytes = &real.as_bytes()[..cut];
        let text = String::from_utf8_lossy(bytes);
        let _ = parse(&text);
    }
    // Garbage lines around a real one do not hide it.
    let mixed =
        format!("junk\n::\n0::/kubepods/pod11111111-2222-4333-8444-555555555555/{id}\n%%%\n");
    assert_eq!(
        parse(&mixed),
        Ok(in_pod("11111111-2222-4333-8444-555555555555", id))
    );
}
