"""A small hand-annotated pronoun coreference set: (text, [(pronoun occurrence, antecedent text)])."""

# each gold item: (pronoun, n-th occurrence of that pronoun in the text counting from 0, antecedent)
COREF_GOLD: list[tuple[str, list[tuple[str, int, str]]]] = [
    (
        "Angela Merkel met Tim Cook in Berlin. She said he was late.",
        [("She", 0, "Angela Merkel"), ("he", 0, "Tim Cook")],
    ),
    ("The sensor failed because it overheated.", [("it", 0, "The sensor")]),
    ("The engineers said they would fix the devices.", [("they", 0, "The engineers")]),
    (
        "Mary told John that she had finished the report. He thanked her.",
        [("she", 0, "Mary"), ("He", 0, "John"), ("her", 0, "Mary")],
    ),
    ("The company announced that it would hire two hundred workers next year.", [("it", 0, "The company")]),
    (
        "Elizabeth walked to the village. Later she returned with her sister.",
        [("she", 0, "Elizabeth"), ("her", 0, "Elizabeth")],
    ),
    (
        "Mr. Darcy looked at the painting. He admired it for a long time.",
        [("He", 0, "Mr. Darcy"), ("it", 0, "the painting")],
    ),
    ("The children played in the garden until they were tired.", [("they", 0, "The children")]),
    (
        "Peter bought a new laptop, but it broke after a week. He was furious.",
        [("it", 0, "a new laptop"), ("He", 0, "Peter")],
    ),
    ("The teacher praised Anna because she had worked hard.", [("she", 0, "Anna")]),
    (
        "My brother lost his keys. He found them under the sofa.",
        [("his", 0, "My brother"), ("He", 0, "My brother"), ("them", 0, "his keys")],
    ),
    (
        "Google released a new phone. It sold well, and its battery impressed reviewers.",
        [("It", 0, "a new phone"), ("its", 0, "a new phone")],
    ),
    ("Sarah and Tom visited Paris. They loved the museums.", [("They", 0, "Sarah and Tom")]),
    ("The doctor examined the patient and told her to rest.", [("her", 0, "the patient")]),
    ("John hurt himself while he was cooking.", [("himself", 0, "John"), ("he", 0, "John")]),
    ("The river flooded the town. It destroyed many houses.", [("It", 0, "The river")]),
    (
        "Lydia wrote to her mother. She described the ball in detail.",
        [("her", 0, "Lydia"), ("She", 0, "Lydia")],
    ),
    ("The server crashed again last night, so the admins restarted it.", [("it", 0, "The server")]),
    ("When the students arrived, the professor greeted them warmly.", [("them", 0, "the students")]),
    ("The queen entered the hall. Everyone bowed to her.", [("her", 0, "The queen")]),
    (
        "James gave the book to his daughter. She read it in one night.",
        [("his", 0, "James"), ("She", 0, "his daughter"), ("it", 0, "the book")],
    ),
    ("The printer is jammed. Please restart it before you call support.", [("it", 0, "The printer")]),
    (
        "Microsoft said that it had fixed the bug, but users reported that they still saw errors.",
        [("it", 0, "Microsoft"), ("they", 0, "users")],
    ),
    (
        "Emma called her father because he had forgotten his phone.",
        [("her", 0, "Emma"), ("he", 0, "her father"), ("his", 0, "her father")],
    ),
]

# Written after the rules were tuned on COREF_GOLD and never used to tune them: the honest figure.
COREF_HELDOUT: list[tuple[str, list[tuple[str, int, str]]]] = [
    ("Robert sold his car because it used too much fuel.", [("his", 0, "Robert"), ("it", 0, "his car")]),
    (
        "The nurses finished their shift and they went home.",
        [("their", 0, "The nurses"), ("they", 0, "The nurses")],
    ),
    (
        "Catherine met the new manager. She found him friendly.",
        [("She", 0, "Catherine"), ("him", 0, "the new manager")],
    ),
    ("The bridge was closed after it was damaged by the storm.", [("it", 0, "The bridge")]),
    ("Daniel called his sister, but she did not answer.", [("his", 0, "Daniel"), ("she", 0, "his sister")]),
    ("The farmers sold their apples at the market.", [("their", 0, "The farmers")]),
    (
        "Helen lost her wallet. A stranger returned it to her.",
        [("her", 0, "Helen"), ("it", 0, "her wallet"), ("her", 1, "Helen")],
    ),
    ("The app crashed whenever it tried to sync.", [("it", 0, "The app")]),
    (
        "Thomas and Rachel bought a house. They painted it blue.",
        [("They", 0, "Thomas and Rachel"), ("it", 0, "a house")],
    ),
    ("The old man sat down because he was tired.", [("he", 0, "The old man")]),
    ("Laura asked her brother for help, and he agreed.", [("her", 0, "Laura"), ("he", 0, "her brother")]),
    ("The committee published its report on Friday.", [("its", 0, "The committee")]),
    ("When the pilots landed, the crowd cheered them.", [("them", 0, "the pilots")]),
    ("The engine stopped because it had no oil.", [("it", 0, "The engine")]),
    ("Kevin told Susan that he would be late.", [("he", 0, "Kevin")]),
    ("The girl dropped her phone, and it cracked.", [("her", 0, "The girl"), ("it", 0, "her phone")]),
]
