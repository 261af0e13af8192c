from streamotion.cli import main

main()
