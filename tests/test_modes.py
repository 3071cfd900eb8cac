from app.modes import LISTENING, SERVER_LOST, SHOWING, ShowState


def test_starts_lost_then_listens_then_shows_a_class():
    show = ShowState(hold_seconds=2.0)
    assert show.scene(server_alive=False, now=0).state == SERVER_LOST
    assert show.scene(server_alive=True, now=0).state == LISTENING
    show.on_result("dog", 0.9, [["dog", 0.9]], True, now=1.0)
    scene = show.scene(True, now=1.1)
    assert (scene.state, scene.label, scene.source) == (SHOWING, "dog", "fallback")


def test_a_class_is_held_then_released_to_listening():
    show = ShowState(hold_seconds=2.0)
    show.on_result("dog", 0.9, [], True, now=0.0)
    show.on_result(None, 0.0, [], True, now=1.0)
    assert show.scene(True, now=1.5).label == "dog"
    assert show.scene(True, now=2.5).state == LISTENING


def test_live_frames_count_only_for_the_class_shown_and_only_while_fresh():
    show = ShowState()
    show.on_result("dog", 0.9, [], True, now=0.0)
    assert show.on_frame("cat", now=0.1) is False
    assert show.scene(True, 0.2).source == "fallback"
    assert show.on_frame("dog", now=0.3) is True
    assert show.scene(True, 0.4).source == "live"
    assert show.scene(True, 0.3 + 3.0).source == "fallback"  # stale: the fallback takes over


def test_class_change_drops_live_frames_of_the_old_class():
    show = ShowState()
    show.on_result("dog", 0.9, [], True, now=0.0)
    show.on_frame("dog", now=0.1)
    show.on_result("cat", 0.8, [], True, now=0.2)
    assert show.scene(True, 0.3).source == "fallback"


def test_losing_the_server_shows_the_fallback_and_says_so():
    show = ShowState()
    show.on_result("dog", 0.9, [], True, now=0.0)
    show.on_frame("dog", now=0.1)
    scene = show.scene(server_alive=False, now=0.2)
    assert scene.state == SERVER_LOST and scene.source == "fallback" and "server lost" in scene.status


def test_an_untrained_model_is_labelled_on_screen():
    show = ShowState()
    show.on_result("dog", 0.9, [], trained=False, now=0.0)
    assert show.scene(True, 0.1).status.startswith("UNTRAINED MODEL")


def test_a_forced_class_is_shown_and_takes_its_own_live_frames():
    show = ShowState()
    show.on_result("dog", 0.9, [], True, now=0.0)
    show.forced = "cow"
    assert show.on_frame("dog", now=0.1) is False  # frames of what is heard no longer show
    assert show.on_frame("cow", now=0.2) is True
    scene = show.scene(True, now=0.3)
    assert (scene.label, scene.confidence, scene.source) == ("cow", 1.0, "live")
    show.on_result("cat", 0.8, [], True, now=0.4)  # what is heard changes underneath
    assert show.scene(True, now=0.5).source == "live"
    show.forced = None
    assert show.scene(True, now=0.6).label == "cat"
