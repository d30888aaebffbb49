use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(type = "", version = 0, colour = "red")]
struct UserCreated {
    id: String,
}

fn main() {}
